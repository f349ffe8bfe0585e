//! Starting and restoring a VM as named lists of steps (in the manner of firecracker-go-sdk's
//! handler lists): [`start_steps`] boots (from a config file Firecracker reads as it starts, or
//! through API requests), [`restore_steps`] is the API list with the boot configuration
//! swapped for a snapshot load. Each step that acquires a host resource journals
//! it in the VM's [ledger](super::ledger) first; a failure at any step unwinds the ledger.

use std::path::Path;
use std::sync::Arc;

use super::boot_file::BootPath;
use super::ledger::{Ledger, Resource, VmJournal};
use super::plan::{boot_plan, ResolvedResources};
use super::{MicroVm, VmResources};
use crate::api::{ActionType, ApiClient, GetVersion, PutAction, PutResource, PutSnapshotLoad};
use crate::config::{LogLevel, SnapshotLoadParams};
use crate::error::{Result, SmartVmError, SnapshotError};
pub use crate::lifecycle::Step;
use crate::process::{instance_id, FirecrackerCommand, FirecrackerProcess, OutputOptions};
use crate::snapshot::{Snapshot, SnapshotDrive};
use crate::staging::{self, StagedDrive};
use crate::version::FirecrackerVersion;

/// The steps of a fresh boot along `path`, in order. From a config file, Firecracker boots the
/// guest as it starts: its output files and the file itself come before the spawn, and no
/// request precedes the guest; through the API, the version is learned and the plan sent after.
pub fn start_steps(path: BootPath) -> Vec<Step> {
    use Step::*;
    let host = [CheckHost, CreateRuntimeDir, Prepare, StageDrives, CreateTaps];
    let rest: &[Step] = match path {
        // The booted VM's socket was bound before the build: no polling for it afterwards.
        BootPath::ConfigFile => &[PrepareOutputFiles, WriteConfigFile, Spawn, ConfirmBoot, WaitForApi],
        BootPath::NoApi => &[PrepareOutputFiles, WriteConfigFile, Spawn, ConfirmBoot],
        BootPath::Api => &[Spawn, WaitForApi, LearnVersion, PrepareOutputFiles, Configure, InstanceStart],
    };
    host.iter().chain(rest).copied().collect()
}

/// The steps of a restore: the API [`start_steps`] with the memory merged after the runtime
/// dir exists, `Configure` swapped for `LoadSnapshot`, and no `InstanceStart`.
pub fn restore_steps() -> Vec<Step> {
    let mut steps = start_steps(BootPath::Api);
    let at = steps.iter().position(|s| *s == Step::CreateRuntimeDir).map_or(0, |i| i + 1);
    steps.insert(at, Step::MaterializeMemory);
    for s in &mut steps {
        if *s == Step::Configure {
            *s = Step::LoadSnapshot;
        }
    }
    steps.retain(|s| *s != Step::InstanceStart);
    steps
}

/// Crash testing: with `SMARTVM_FAULT_KILL_AFTER_STEP=<n>` in its environment, the program
/// SIGKILLs itself right after step `n` (0-based) of a start or restore, so tests can prove that
/// `smartvm gc` reclaims whatever a crash at any step boundary leaves. Only in builds with the
/// test feature `fault-injection`.
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod fault_injection {
    /// The variable that arms the hook.
    pub const ENV: &str = "SMARTVM_FAULT_KILL_AFTER_STEP";

    pub(super) fn after_step(index: usize) {
        static AT: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
        let at = *AT.get_or_init(|| std::env::var(ENV).ok().and_then(|v| v.parse().ok()));
        if at == Some(index) {
            // SAFETY: signalling our own process.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }
}

/// The crash-test hook after step `index`; nothing in builds without `fault-injection`.
#[cfg_attr(not(feature = "fault-injection"), allow(unused_variables))]
fn fault_point(index: usize) {
    #[cfg(feature = "fault-injection")]
    fault_injection::after_step(index);
}

/// Where a restored VM's state comes from.
pub(super) enum RestoreSource {
    /// Load exactly these parameters.
    Params(SnapshotLoadParams),
    /// Materialize this snapshot (merging Diffs) and load it.
    Snapshot { snapshot: Snapshot, resume: bool, track_dirty_pages: bool },
}

impl RestoreSource {
    /// True when the restored VM resumes once loaded.
    pub(super) fn resumes(&self) -> bool {
        match self {
            RestoreSource::Params(p) => p.resume_vm,
            RestoreSource::Snapshot { resume, .. } => *resume,
        }
    }
}

/// What the steps learn and hand to each other.
#[derive(Default)]
pub(super) struct StartContext {
    restore: Option<RestoreSource>,
    load: Option<SnapshotLoadParams>,
    resolved: ResolvedResources,
    api: Option<Arc<ApiClient>>,
    version: Option<FirecrackerVersion>,
    /// The config file, as Firecracker sees it (config-file boot).
    config_file: Option<std::path::PathBuf>,
    /// Config-file boot: Firecracker reported the VM built and running.
    booted: bool,
}

impl StartContext {
    pub(super) fn new(restore: Option<RestoreSource>) -> Self {
        Self { restore, ..Self::default() }
    }

    /// The context of a checkout: what the warm steps learned (the API, the version).
    pub(super) fn warmed(inner: &VmResources) -> Self {
        Self { api: inner.api.clone(), version: inner.version, ..Self::default() }
    }

    fn api(&self) -> Result<Arc<ApiClient>> {
        self.api.clone().ok_or(SmartVmError::NoClient)
    }

    fn saved_drives(&self) -> Option<Vec<SnapshotDrive>> {
        match &self.restore {
            None => None,
            Some(RestoreSource::Params(_)) => Some(Vec::new()),
            Some(RestoreSource::Snapshot { snapshot, .. }) => Some(snapshot.drives.clone()),
        }
    }
}

fn ledger(inner: &mut VmResources) -> Result<&mut Ledger> {
    inner.ledger.as_mut().ok_or(SmartVmError::NoClient)
}

fn journal_err(e: std::io::Error) -> SmartVmError {
    SmartVmError::io("cannot write the VM journal", e)
}

impl MicroVm {
    /// Runs `steps` in order; the first failure is returned with its step (the caller unwinds).
    pub(super) async fn run_steps(
        &self,
        steps: &[Step],
        inner: &mut VmResources,
        cx: &mut StartContext,
    ) -> Result<(), (Step, SmartVmError)> {
        for (index, &step) in steps.iter().enumerate() {
            self.events.publish(super::VmEvent {
                state: crate::lifecycle::VmState::Configuring,
                step: Some(step),
                exit: None,
            });
            let started = std::time::Instant::now();
            self.run_step(step, inner, cx).await.map_err(|e| (step, e))?;
            tracing::debug!(vm = %self.id, ?step, micros = started.elapsed().as_micros() as u64, "step done");
            fault_point(index);
        }
        Ok(())
    }

    async fn run_step(&self, step: Step, inner: &mut VmResources, cx: &mut StartContext) -> Result<()> {
        match step {
            Step::CheckHost => self.check_host().await,
            Step::CreateRuntimeDir => self.create_runtime_dir(inner),
            Step::MaterializeMemory => self.materialize_memory(cx).await,
            Step::Prepare => self.prepare(inner, cx),
            Step::StageDrives => self.stage_drives(inner, cx).await,
            Step::CreateTaps => self.create_taps(inner, &mut cx.resolved).await,
            Step::Spawn => self.spawn(inner, cx.config_file.clone()).await,
            Step::WaitForApi => self.wait_for_api(inner, cx).await,
            Step::LearnVersion => self.learn_version(inner, cx).await,
            Step::PrepareOutputFiles => self.prepare_output_files(),
            Step::WriteConfigFile => self.write_config_file(inner, cx),
            Step::ConfirmBoot => self.confirm_boot(inner, cx).await,
            Step::Configure => self.configure(cx).await,
            Step::InstanceStart => cx.api()?.send(&PutAction::new(ActionType::InstanceStart)).await,
            Step::LoadSnapshot => self.load_snapshot_step(cx).await,
        }
    }

    /// What the executor creates before spawn: journaled first, then made.
    fn prepare(&self, inner: &mut VmResources, cx: &mut StartContext) -> Result<()> {
        let plan = self.executor.plan(&self.config)?;
        let journal = ledger(inner)?;
        for r in &plan.resources {
            journal.record(r.clone()).map_err(journal_err)?;
        }
        self.executor.prepare(&self.config, &plan, cx.load.as_mut())?;
        let (seen, resolved) = (plan.seen, &mut cx.resolved);
        resolved.kernel_path = seen.kernel_path.or(resolved.kernel_path.take());
        resolved.initrd_path = seen.initrd_path.or(resolved.initrd_path.take());
        resolved.logger_path = seen.logger_path.or(resolved.logger_path.take());
        resolved.metrics_path = seen.metrics_path.or(resolved.metrics_path.take());
        resolved.vsock_path = seen.vsock_path.or(resolved.vsock_path.take());
        Ok(())
    }

    async fn check_host(&self) -> Result<()> {
        if let Some(fetch) = &self.options.fetch_binary {
            if std::fs::symlink_metadata(&self.options.firecracker_binary).is_err() {
                fetch.fetch().await?;
            }
        }
        self.executor.check(&self.config, crate::executor::CheckScope::Host)?;
        crate::trust::ensure_private_dir(&self.options.runtime_dir)?;
        Ok(())
    }

    fn create_runtime_dir(&self, inner: &mut VmResources) -> Result<()> {
        let journal = VmJournal {
            vm_id: self.id.clone(),
            socket: self.socket_path(),
            config: Some(self.config.clone()),
            detached: self.options.policy.detached,
            pool: self.pool.clone(),
            ..VmJournal::default()
        }
        .owned_by_this_process();
        let ledger = Ledger::create(&self.vm_dir, journal).map_err(|e| {
            SmartVmError::io(
                format!("cannot create VM dir {} (is a VM with this id running?)", self.vm_dir.display()),
                e,
            )
        })?;
        inner.ledger = Some(ledger);
        Ok(())
    }

    async fn materialize_memory(&self, cx: &mut StartContext) -> Result<()> {
        let params = match cx.restore.as_ref() {
            Some(RestoreSource::Params(p)) => p.clone(),
            Some(RestoreSource::Snapshot { snapshot, resume, track_dirty_pages }) => {
                let mem = if snapshot.kind == crate::config::SnapshotType::Diff {
                    let merged = self.vm_dir.join("memory.merged");
                    let (snap, dest) = (snapshot.clone(), merged.clone());
                    tokio::task::spawn_blocking(move || snap.materialize_memory(&dest))
                        .await
                        .map_err(|e| SnapshotError::Task("memory merge", e))??;
                    merged
                } else {
                    snapshot.mem_path.clone()
                };
                let mut params = SnapshotLoadParams::new(&snapshot.state_path, mem);
                params.resume_vm = *resume;
                params.track_dirty_pages = *track_dirty_pages;
                params
            }
            None => return Err(SnapshotError::NothingToRestore.into()),
        };
        cx.load = Some(params);
        Ok(())
    }

    /// Stages drives into the executor's drives dir: the config's ephemeral drives on a fresh
    /// start (every drive for an executor that needs its own copies), a snapshot's saved copies
    /// on restore; each copy is journaled before it is made.
    async fn stage_drives(&self, inner: &mut VmResources, cx: &mut StartContext) -> Result<()> {
        let saved = cx.saved_drives();
        let drives_dir = self.layout.drives_dir.clone();
        let plan = self.staging_plan(saved.as_deref(), &drives_dir);
        if plan.is_empty() {
            return Ok(());
        }
        if saved.is_some() && !self.layout.fixed_drive_paths {
            return Err(SnapshotError::NeedsDriveNamespace.into());
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&drives_dir)
            .map_err(|e| SmartVmError::io("cannot create drives dir", e))?;
        for s in &plan {
            ledger(inner)?.record(Resource::StagedDrive(s.clone())).map_err(journal_err)?;
            let one = vec![s.clone()];
            tokio::task::spawn_blocking(move || staging::execute(&one))
                .await
                .map_err(|e| SmartVmError::io("staging task failed", std::io::Error::other(e)))??;
        }
        let handed = std::iter::once(drives_dir).chain(plan.iter().map(|s| s.staged.clone()));
        self.executor.hand_over(&handed.collect::<Vec<_>>())?;
        cx.resolved.drive_paths =
            plan.iter().map(|s| (s.drive_id.clone(), self.executor.path_seen(&s.staged))).collect();
        Ok(())
    }

    fn staging_plan(&self, saved: Option<&[SnapshotDrive]>, drives_dir: &Path) -> Vec<StagedDrive> {
        match saved {
            None if self.layout.stages_every_drive => {
                let all: Vec<_> = self
                    .config
                    .drives
                    .iter()
                    .map(|d| crate::config::DriveConfig { ephemeral: Some(true), ..d.clone() })
                    .collect();
                staging::plan(&all, true, drives_dir)
            }
            None => staging::plan(&self.config.drives, self.options.policy.ephemeral_writable_drives, drives_dir),
            Some(saved) => saved
                .iter()
                .map(|d| StagedDrive {
                    drive_id: d.drive_id.clone(),
                    source: d.path.clone(),
                    staged: drives_dir.join(&d.file_name),
                })
                .collect(),
        }
    }

    /// Without the network feature no TAP can be made: a managed interface is a config error.
    #[cfg(not(feature = "network"))]
    async fn create_taps(&self, _inner: &mut VmResources, _resolved: &mut ResolvedResources) -> Result<()> {
        match self.config.network_interfaces.iter().position(|n| n.host_dev_name.is_none()) {
            None => Ok(()),
            Some(i) => Err(crate::config::ConfigErrors::single(
                format!("networkInterfaces[{i}].hostDevName"),
                "is required: this build has no managed networking (the network feature)",
            )
            .into()),
        }
    }

    /// TAPs (and MACs) for interfaces that name no host device, each journaled before it exists.
    #[cfg(feature = "network")]
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
            let journal = ledger(inner)?;
            let mut record = |name: &str| journal.record(Resource::Tap { name: name.to_string() });
            let tap = network.create_tap_recorded(&self.id, &n.iface_id, &mut record).await?;
            resolved.tap_names.insert(n.iface_id.clone(), tap.name.clone());
            resolved.guest_macs.insert(n.iface_id.clone(), tap.mac);
            if self.options.append_network_boot_args && resolved.extra_boot_args.is_none() {
                resolved.extra_boot_args = Some(tap.guest_boot_args());
            }
            inner.taps.push(tap.clone());
            self.facts().taps.push(tap);
        }
        Ok(())
    }

    /// The command line Firecracker runs with, as the executor shapes it.
    fn command(&self, config_file: Option<std::path::PathBuf>) -> FirecrackerCommand {
        let opts = &self.options;
        let mut base = FirecrackerCommand::new(&opts.firecracker_binary, self.socket_path());
        base.id = Some(instance_id(&self.id));
        base.seccomp = opts.seccomp.clone();
        base.no_api = !opts.api;
        // A config-file boot reports its outcome only in the log, at level Info.
        let default = if config_file.is_some() { LogLevel::Info } else { LogLevel::Warning };
        let level = opts.firecracker_log_level.unwrap_or(default);
        base.config_file = config_file;
        self.executor.command(base, self.config.logger.is_none().then_some(level))
    }

    async fn spawn(&self, inner: &mut VmResources, config_file: Option<std::path::PathBuf>) -> Result<()> {
        let opts = &self.options;
        let began = std::time::Instant::now();
        let journal = ledger(inner)?;
        let (process, acquired) = self.executor.spawn_resources(&self.config);
        for r in acquired {
            journal.record(r).map_err(journal_err)?;
        }
        journal.record(Resource::Process(process)).map_err(journal_err)?;
        let journaled = began.elapsed();
        let output = OutputOptions {
            buffer_lines: Some(opts.console_lines),
            console_file: opts.console_file.clone(),
            detached: opts.policy.detached.then(|| self.vm_dir.clone()),
            consoles: Some((self.console.clone(), self.stderr.clone())),
        };
        let process = FirecrackerProcess::spawn(&self.command(config_file), &output).await?;
        let forked = began.elapsed() - journaled;
        if tracing::enabled!(tracing::Level::DEBUG) {
            // The last figure of the per-VM cost breakdown: spawn → the guest's first output.
            let (console, id) = (process.console().clone(), self.id.clone());
            tokio::spawn(async move {
                if console.wait_for_line(std::time::Duration::from_secs(3600), |_| true).await.is_some() {
                    tracing::debug!(vm = %id, micros = began.elapsed().as_micros() as u64, "first console line");
                }
            });
        }
        *self.exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(process.exit_watch());
        // An end nobody asked for (the guest powered off, a crash) is published when it happens.
        let (events, mut exit) = (self.events.clone(), process.exit_watch());
        tokio::spawn(async move {
            let ended = exit.wait_for(Option::is_some).await.ok().and_then(|e| *e);
            if let Some(ended) = ended {
                events.process_ended(ended);
            }
        });
        let (pid, start_time) = (process.pid(), process.start_time());
        inner.process = Some(process);
        self.facts().pid = Some(pid);
        ledger(inner)?.process_spawned(pid, start_time).map_err(journal_err)?;
        let micros = |d: std::time::Duration| d.as_micros() as u64;
        tracing::debug!(vm = %self.id, pid, journal_us = micros(journaled), spawn_us = micros(forked), "spawned");
        Ok(())
    }

    async fn wait_for_api(&self, inner: &mut VmResources, cx: &mut StartContext) -> Result<()> {
        let opts = &self.options;
        let socket = self.socket_path();
        let process = inner.process.as_ref().ok_or(SmartVmError::NoClient)?;
        let api = Arc::new(ApiClient::new(&socket).with_timeout(opts.request_timeout));
        if cx.booted {
            // Firecracker binds its socket before it builds the VM it just reported running.
            inner.api = Some(api.clone());
            cx.api = Some(api);
            return Ok(());
        }
        let timeout = opts.policy.socket_timeout;
        match process.wait_for_path(&socket, timeout).await {
            Ok(true) => {}
            Ok(false) => return Err(crate::api::not_ready(&socket, timeout)),
            Err(crate::process::ProcessError::ExitedEarly { exit, .. }) => {
                return self.ended_before_ready(process, exit, cx).await
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            ready = api.connect(timeout) => if let Err(e) = ready {
                // A refused or reset connection to a process that is ending: what ended it?
                return match process.wait(std::time::Duration::from_millis(500)).await {
                    Some(exit) => self.ended_before_ready(process, exit, cx).await,
                    None => Err(e),
                };
            },
            exit = process.wait(timeout) => {
                return match exit {
                    Some(exit) => self.ended_before_ready(process, exit, cx).await,
                    None => Err(crate::api::not_ready(&socket, timeout)),
                };
            }
        }
        inner.api = Some(api.clone());
        cx.api = Some(api);
        Ok(())
    }

    /// The process ended before its API answered. A config-file boot may have run a short
    /// guest to its end already (the boot is then done: `Ok`); else the error, for a config-file
    /// boot the resource Firecracker refused. Firecracker prints the outcome before it exits;
    /// the end of its stderr is awaited briefly.
    async fn ended_before_ready(
        &self,
        process: &FirecrackerProcess,
        exit: crate::process::ExitInfo,
        cx: &StartContext,
    ) -> Result<()> {
        if cx.config_file.is_some() {
            let stderr = process.stderr();
            let outcome = |l: &str| super::boot_file::is_booted_line(l) || l.starts_with("Error: ");
            // The process has ended: its stderr closes once drained (bounded for a stray holder of the pipe).
            let last = stderr.wait_for_line(self.options.policy.socket_timeout, outcome).await;
            if last.is_some_and(|l| super::boot_file::is_booted_line(&l)) {
                return Ok(());
            }
            if let Some(refused) = super::boot_file::rejection(&stderr.lines()) {
                return Err(refused);
            }
        }
        Err(process.exited_early(exit).into())
    }

    /// Config-file boot: the plan for the known version, written where Firecracker reads it.
    fn write_config_file(&self, inner: &mut VmResources, cx: &mut StartContext) -> Result<()> {
        let version = self.options.firecracker_version.unwrap_or(FirecrackerVersion::DEFAULT);
        inner.version = Some(version);
        cx.version = Some(version);
        let bytes = boot_plan(&self.config, &cx.resolved, version)?.config_file()?;
        let (host, seen) = self.layout.config_file.clone();
        let write = || {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&host)?;
            std::io::Write::write_all(&mut f, &bytes)
        };
        write().map_err(|e| SmartVmError::io(format!("cannot write {}", host.display()), e))?;
        self.executor.hand_over(std::slice::from_ref(&host))?;
        cx.config_file = Some(seen);
        Ok(())
    }

    /// Config-file boot: Firecracker logs the VM it built from the file as started, or ends.
    /// (No API request may wait on the build: Firecracker aborts, without its error message,
    /// when it fails with a request pending.)
    async fn confirm_boot(&self, inner: &mut VmResources, cx: &mut StartContext) -> Result<()> {
        let process = inner.process.as_ref().ok_or(SmartVmError::NoClient)?;
        let timeout = self.options.policy.socket_timeout;
        let started = process.stderr().wait_for_marker(timeout, super::boot_file::is_booted_line).await;
        if started.is_ok() {
            cx.booted = true;
            return Ok(());
        }
        match process.wait(timeout).await {
            Some(exit) => {
                self.ended_before_ready(process, exit, cx).await?;
                cx.booted = true;
                Ok(())
            }
            // Neither booted nor ended: not ready in time, like an API that never answers.
            None => Err(crate::api::not_ready(&self.socket_path(), timeout)),
        }
    }

    async fn learn_version(&self, inner: &mut VmResources, cx: &mut StartContext) -> Result<()> {
        let version = match self.options.firecracker_version {
            Some(v) => v,
            None => {
                let reported = cx.api()?.send(&GetVersion).await?;
                reported.firecracker_version.parse().unwrap_or(FirecrackerVersion::DEFAULT)
            }
        };
        inner.version = Some(version);
        cx.version = Some(version);
        Ok(())
    }

    /// Firecracker before v1.14 requires log and metrics files to exist.
    fn prepare_output_files(&self) -> Result<()> {
        let paths =
            self.config.logger.iter().map(|l| &l.log_path).chain(self.config.metrics.iter().map(|m| &m.metrics_path));
        for path in paths {
            if !path.exists() {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| SmartVmError::io(format!("cannot create {}", path.display()), e))?;
            }
        }
        Ok(())
    }

    async fn configure(&self, cx: &mut StartContext) -> Result<()> {
        let version = cx.version.unwrap_or(FirecrackerVersion::DEFAULT);
        let api = cx.api()?;
        for request in boot_plan(&self.config, &cx.resolved, version)?.requests()? {
            api.send(&request).await?;
        }
        Ok(())
    }

    async fn load_snapshot_step(&self, cx: &mut StartContext) -> Result<()> {
        let api = cx.api()?;
        let version = cx.version.unwrap_or(FirecrackerVersion::DEFAULT);
        let encode = |e| SmartVmError::io("cannot encode the logger config", std::io::Error::other(e));
        if let Some(logger) = cx.resolved.logger(&self.config) {
            api.send(&PutResource::of(&logger).map_err(encode)?).await?;
        }
        if let Some(metrics) = cx.resolved.metrics(&self.config) {
            api.send(&PutResource::of(&metrics).map_err(encode)?).await?;
        }
        let mut params = cx.load.clone().ok_or(SnapshotError::NothingToRestore)?;
        // Interfaces whose TAP smartvm created for this VM get it through network_overrides.
        for (iface_id, tap) in &cx.resolved.tap_names {
            if !params.network_overrides.iter().any(|o| &o.iface_id == iface_id) {
                let host_dev_name = tap.clone();
                params
                    .network_overrides
                    .push(crate::config::NetworkOverride { iface_id: iface_id.clone(), host_dev_name });
            }
        }
        let payload = params.payload(version).map_err(|e| e.at("snapshot"))?;
        api.send(&PutSnapshotLoad(payload)).await
    }
}

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

#[cfg(test)]
mod tests;
