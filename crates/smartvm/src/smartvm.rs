//! [`SmartVm`]: options, the Firecracker binary, the VM registry and global cleanup.

mod adoption;
mod pools;

pub use adoption::AdoptOutcome;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::{ApiClient, GetInstanceInfo, PatchVmState, VmStateBody, VmStateRequest};
use crate::config::{ConfigErrors, VmConfig};
use crate::error::{Result, SmartVmError, SnapshotError};
#[cfg(feature = "images")]
use crate::images::{BaseImageBundle, BaseImageManager, BaseImageOptions, ImageManager, Progress};
#[cfg(feature = "network")]
use crate::network::{NetworkManager, NetworkOptions};
use crate::options::{binary_candidates, SmartVmOptions};
use crate::process::StopPlan;
use crate::snapshot::Snapshot;
use crate::version::FirecrackerVersion;
use crate::vm::reclaim::ReclaimReport;
use crate::vm::{MicroVm, UnwindScope, VmJournal, VmRuntimeOptions};

/// Where orchestrators journal their bridge and NAT table, inside the runtime dir.
#[cfg(feature = "network")]
const NETWORK_STATE_DIR: &str = ".network";

/// How long `firecracker --version` may take.
const VERSION_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The orchestrator: creates, tracks and cleans up VMs.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> smartvm::Result<()> {
/// use std::time::Duration;
/// use smartvm::{SmartVm, SmartVmOptions, VmConfig};
///
/// let smartvm = SmartVm::new(SmartVmOptions::from_env());
/// let vm = smartvm.create_vm(&VmConfig::new("/images/vmlinux").with_id("web").with_machine(1, 128))?;
/// vm.start().await?;
/// // Snapshot it into a bundle, then start three clones of it.
/// let bundle = std::path::Path::new("/var/tmp/web-snapshot");
/// smartvm.snapshot_vm("web", bundle, false).await?;
/// let clones = smartvm.restore_bundle(bundle, Some("web-clone".into()), 3, true).await?;
/// assert_eq!(clones.len(), 3);
/// smartvm.cleanup().await?; // every VM, its process, TAPs and files: gone
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SmartVm {
    options: SmartVmOptions,
    vms: Mutex<HashMap<String, Arc<MicroVm>>>,
    pools: Mutex<HashMap<String, Arc<crate::pool::VmPool>>>,
    versions: Mutex<HashMap<PathBuf, FirecrackerVersion>>,
    #[cfg(feature = "network")]
    network: std::sync::OnceLock<Arc<NetworkManager>>,
    /// The auto-download shared by this orchestrator's VMs (made on first need).
    #[cfg(feature = "images")]
    release_fetch: std::sync::OnceLock<Arc<crate::images::ReleaseFetch>>,
}

impl Default for SmartVm {
    fn default() -> Self {
        Self::new(SmartVmOptions::from_env())
    }
}

impl SmartVm {
    /// An orchestrator with `options`.
    pub fn new(options: SmartVmOptions) -> Self {
        Self {
            options,
            vms: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
            #[cfg(feature = "network")]
            network: std::sync::OnceLock::new(),
            #[cfg(feature = "images")]
            release_fetch: std::sync::OnceLock::new(),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &SmartVmOptions {
        &self.options
    }

    /// The parent of all per-VM runtime dirs.
    pub fn runtime_dir(&self) -> &Path {
        &self.options.runtime_dir
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<MicroVm>>> {
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The image manager for this data dir, arch and mirrors.
    #[cfg(feature = "images")]
    pub fn image_manager(&self) -> ImageManager {
        ImageManager::new(&self.options.data_dir, &self.options.arch, self.options.mirrors.clone())
    }

    /// The base-image manager (`INVALID_BASE_IMAGE_CACHE_LIMIT` when `max_stored_base_images` is 0).
    #[cfg(feature = "images")]
    pub fn base_image_manager(&self) -> Result<BaseImageManager> {
        let o = &self.options;
        let manager = BaseImageManager::new(self.image_manager(), o.base_image_cache_dir(), o.max_stored_base_images)?;
        Ok(manager.with_hosted_manifest(o.base_image_manifest_url.clone(), o.base_image_manifest_path.clone()))
    }

    /// Resolves and caches a base-image bundle. Without a manifest in `options`, the
    /// orchestrator's (`base_image_manifest_url`/`_path`, from `SMARTVM_BASE_IMAGE_MANIFEST_URL`/
    /// `_PATH`) applies; either way a manifest implies the hosted preset unless another preset is
    /// named (then `INVALID_CONFIG`, see [`BaseImageOptions::effective_preset`]).
    #[cfg(feature = "images")]
    pub async fn ensure_base_image(
        &self,
        options: &BaseImageOptions,
        progress: &dyn Progress,
    ) -> Result<BaseImageBundle> {
        Ok(self.base_image_manager()?.ensure_base_image(options, progress).await?)
    }

    /// Finds the binary locally, else downloads the configured version (default: the latest
    /// release) into `<data_dir>/bin/<version>/`.
    #[cfg(feature = "images")]
    pub async fn ensure_binary(&self, progress: &dyn Progress) -> Result<PathBuf> {
        if let Ok(found) = self.find_binary() {
            return Ok(found);
        }
        if self.options.firecracker_binary_path.is_some() {
            return self.find_binary();
        }
        let images = self.image_manager();
        let version = match self.options.firecracker_version {
            Some(v) => v.to_string(),
            None => images.latest_version().await?,
        };
        Ok(images.ensure_firecracker(&version, progress).await?)
    }

    /// Finds the Firecracker binary without downloading (see [`binary_candidates`]). The first
    /// candidate that exists must pass the [trust check](crate::trust) (`UNTRUSTED_PATH`
    /// otherwise: it is never executed); `BINARY_NOT_FOUND` lists every place searched.
    pub fn find_binary(&self) -> Result<PathBuf> {
        let candidates = binary_candidates(&self.options, std::env::var_os("PATH").as_deref());
        for c in &candidates {
            if std::fs::symlink_metadata(c).is_ok() {
                crate::trust::check(c, crate::trust::Expect::Executable)?;
                return Ok(c.clone());
            }
        }
        Err(SmartVmError::BinaryNotFound { searched: candidates })
    }

    /// The version of `binary` (`firecracker --version`, bounded by a timeout, run once per
    /// binary and cached). `None` for a binary that fails the trust check: it is not executed.
    pub fn binary_version(&self, binary: &Path) -> Option<FirecrackerVersion> {
        let mut cache = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cache.get(binary) {
            return Some(*v);
        }
        crate::trust::check(binary, crate::trust::Expect::Executable).ok()?;
        let mut cmd = std::process::Command::new(binary);
        cmd.arg("--version");
        let out = crate::process::output_within(&mut cmd, VERSION_PROBE_TIMEOUT).ok()??;
        let v = FirecrackerVersion::from_version_output(&String::from_utf8_lossy(&out.stdout))?;
        cache.insert(binary.to_path_buf(), v);
        Some(v)
    }

    /// Runtime options for a new VM: with the binary found, or, where auto-download applies,
    /// with the path the pinned release will be installed at and the fetcher that installs it.
    pub(crate) fn pool_registry(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<crate::pool::VmPool>>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn runtime_options_for_new_vm(&self) -> Result<VmRuntimeOptions> {
        match self.find_binary() {
            Ok(binary) => Ok(self.runtime_options(binary)),
            #[cfg(feature = "images")]
            Err(SmartVmError::BinaryNotFound { .. })
                if self.options.auto_download_binary && self.options.firecracker_binary_path.is_none() =>
            {
                let version = self.options.firecracker_version.unwrap_or(FirecrackerVersion::DEFAULT);
                let fetch = self.release_fetch(version);
                let mut options = self.runtime_options(fetch.binary());
                options.firecracker_version = Some(version);
                options.fetch_binary = Some(fetch);
                Ok(options)
            }
            Err(e) => Err(e),
        }
    }

    #[cfg(feature = "images")]
    fn release_fetch(&self, version: FirecrackerVersion) -> Arc<crate::images::ReleaseFetch> {
        let make = || Arc::new(crate::images::ReleaseFetch::new(self.image_manager(), version.to_string()));
        self.release_fetch.get_or_init(make).clone()
    }

    /// Per-VM runtime options derived from these options and `binary`.
    pub fn runtime_options(&self, binary: PathBuf) -> VmRuntimeOptions {
        let mut o = VmRuntimeOptions::new(binary, &self.options.runtime_dir);
        o.firecracker_version = self.binary_version(&o.firecracker_binary);
        o.policy = self.options.vm_policy.clone();
        o.stop_plan = StopPlan::with_grace(self.options.stop_grace);
        o.jailer = self.options.effective_jailer(&o.firecracker_binary);
        o
    }

    /// Validates `config` (cloned) and registers a VM in `Created` state; does not boot it.
    /// Without a Firecracker binary on this host, the VM downloads one as it starts where
    /// [`auto_download_binary`](SmartVmOptions::auto_download_binary) allows, else this is
    /// `BINARY_NOT_FOUND`.
    pub fn create_vm(&self, config: &VmConfig) -> Result<Arc<MicroVm>> {
        config.validate()?;
        #[cfg_attr(not(feature = "network"), allow(unused_mut))]
        let mut options = self.runtime_options_for_new_vm()?;
        #[cfg(feature = "network")]
        if config.network_interfaces.iter().any(|n| n.host_dev_name.is_none()) {
            options.network = Some(self.network()?);
        }
        let vm = MicroVm::from_validated(config, options);
        vm.check_runtime_fit()?;
        self.register(vm)
    }

    /// The network manager for `bridge_name`/`subnet` (created on first use; validates them,
    /// touches nothing on the host until a TAP is needed).
    #[cfg(feature = "network")]
    pub fn network(&self) -> Result<Arc<NetworkManager>> {
        if let Some(n) = self.network.get() {
            return Ok(n.clone());
        }
        let options = NetworkOptions {
            bridge_name: self.options.bridge_name.clone(),
            subnet: self.options.subnet.clone(),
            state_dir: Some(self.options.runtime_dir.join(NETWORK_STATE_DIR)),
            ..NetworkOptions::default()
        };
        let manager = Arc::new(NetworkManager::new(options)?);
        Ok(self.network.get_or_init(|| manager).clone())
    }

    /// Like [`create_vm`](Self::create_vm) with explicit runtime options.
    pub fn create_vm_with(&self, config: &VmConfig, options: VmRuntimeOptions) -> Result<Arc<MicroVm>> {
        self.register(MicroVm::new(config, options)?)
    }

    fn register(&self, vm: MicroVm) -> Result<Arc<MicroVm>> {
        let vm = Arc::new(vm);
        self.register_arc(vm.clone())?;
        Ok(vm)
    }

    pub(crate) fn register_arc(&self, vm: Arc<MicroVm>) -> Result<()> {
        let mut reg = self.registry();
        if reg.contains_key(vm.id()) {
            return Err(ConfigErrors::single("id", format!("a VM with id {:?} already exists", vm.id())).into());
        }
        reg.insert(vm.id().to_string(), vm.clone());
        Ok(())
    }

    /// Registers a VM for `config` (its id names the new VM) and restores it from `snapshot`.
    /// On failure nothing stays registered or on disk.
    pub async fn restore_vm(&self, config: &VmConfig, snapshot: &Snapshot, resume: bool) -> Result<Arc<MicroVm>> {
        let vm = self.create_vm(config)?;
        if let Err(e) = vm.restore_snapshot(snapshot, resume, false).await {
            self.registry().remove(vm.id());
            return Err(e);
        }
        Ok(vm)
    }

    /// Snapshots a running VM by id into `dir` (see [`MicroVm::snapshot`]): one of this
    /// orchestrator's VMs, or one that another smartvm program runs in the same runtime dir
    /// (found through its journal). The VM is paused for the snapshot and resumed afterwards
    /// unless `keep_paused`.
    pub async fn snapshot_vm(&self, id: &str, dir: &Path, keep_paused: bool) -> Result<Snapshot> {
        if let Some(vm) = self.vm(id) {
            let was_running = vm.state() == crate::lifecycle::VmState::Running;
            if was_running {
                vm.pause().await?;
            }
            let snapshot = vm.snapshot(dir, None).await;
            if was_running && !keep_paused {
                vm.resume().await?;
            }
            return snapshot;
        }
        let vm_dir = self.options.runtime_dir.join(crate::staging::sanitize_path_part(id));
        let journal = VmJournal::read(&vm_dir).map_err(|e| match e {
            crate::vm::ledger::JournalError::Untrusted { source, .. } => SmartVmError::Untrusted(source),
            other => SnapshotError::NoSuchVm {
                id: id.into(),
                runtime_dir: self.options.runtime_dir.clone(),
                why: other.to_string(),
            }
            .into(),
        })?;
        if !journal.process_alive() {
            return Err(SnapshotError::NotRunning(id.into()).into());
        }
        let output = crate::snapshot::SnapshotOutput::for_journal(&journal).map_err(SnapshotError::Jail)?;
        let api = ApiClient::new(&journal.socket);
        let was_running = api.send(&GetInstanceInfo).await?.state == "Running";
        let set = |state| PatchVmState(VmStateBody { state });
        if was_running {
            api.send(&set(VmStateRequest::Paused)).await?;
        }
        let snapshot =
            crate::snapshot::write_bundle(&api, &output, dir, None, &journal.staged(), journal.config.as_ref()).await;
        if was_running && !keep_paused {
            api.send(&set(VmStateRequest::Resumed)).await?;
        }
        snapshot
    }

    /// Restores the bundle in `dir` (see [`Snapshot::load`]) into `count` new VMs with the
    /// configuration it carries: one VM named `id` (default: a new UUID), or for `count > 1`
    /// clones named `<id>-<i>` (default `id`: `clone`). If any fails, none is left.
    pub async fn restore_bundle(
        &self,
        dir: &Path,
        id: Option<String>,
        count: usize,
        resume: bool,
    ) -> Result<Vec<Arc<MicroVm>>> {
        let snapshot = Snapshot::load(dir)?;
        let mut config = *snapshot.vm_config.clone().ok_or_else(|| SnapshotError::NoConfig(dir.to_path_buf()))?;
        config.id = id;
        if count <= 1 {
            return Ok(vec![self.restore_vm(&config, &snapshot, resume).await?]);
        }
        self.clone_vms(&config, &snapshot, count, resume).await
    }

    /// Starts `count` VMs from one snapshot concurrently, with ids `<id>-<i>` (`id` from
    /// `config`, or `clone`). If any fails, all are cleaned up and the first error returned.
    pub async fn clone_vms(
        &self,
        config: &VmConfig,
        snapshot: &Snapshot,
        count: usize,
        resume: bool,
    ) -> Result<Vec<Arc<MicroVm>>> {
        let base = config.id.clone().unwrap_or_else(|| "clone".into());
        let configs: Vec<VmConfig> =
            (0..count).map(|i| VmConfig { id: Some(format!("{base}-{i}")), ..config.clone() }).collect();
        // Loaded paused, then resumed together: guests resumed early would take the CPU from
        // the loads still running (measured with `smartvm bench --clones`).
        let results = futures_util::future::join_all(configs.iter().map(|c| self.restore_vm(c, snapshot, false))).await;
        let (mut vms, mut failed) = (Vec::new(), None);
        for r in results {
            match r {
                Ok(vm) => vms.push(vm),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if resume && failed.is_none() {
            let resumed = futures_util::future::join_all(vms.iter().map(|vm| vm.resume())).await;
            failed = resumed.into_iter().find_map(Result::err);
        }
        if let Some(e) = failed {
            // All or none: the clones that started go again.
            for vm in &vms {
                let _ = self.remove_vm(vm.id()).await;
            }
            return Err(e);
        }
        Ok(vms)
    }

    /// A registered VM.
    pub fn vm(&self, id: &str) -> Option<Arc<MicroVm>> {
        self.registry().get(id).cloned()
    }

    /// Ids of registered VMs (sorted).
    pub fn vm_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.registry().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Number of registered VMs.
    pub fn vm_count(&self) -> usize {
        self.registry().len()
    }

    /// Unregisters one VM and hands it back without touching it: the seed's `removeVM`. Its
    /// process, runtime dir and TAPs are then the caller's to [`cleanup`](MicroVm::cleanup)
    /// (or to leave for `smartvm gc` once this program ends); `None` for an unknown id.
    pub fn forget_vm(&self, id: &str) -> Option<Arc<MicroVm>> {
        self.registry().remove(id)
    }

    /// Cleans up and unregisters one VM (the seed's `removeVM` only forgets it: that is
    /// [`forget_vm`](Self::forget_vm)).
    pub async fn remove_vm(&self, id: &str) -> Result<bool> {
        let vm = self.registry().remove(id);
        match vm {
            Some(vm) => vm.cleanup().await.map(|_| true),
            None => Ok(false),
        }
    }

    /// Stops every running or paused VM (errors are collected; the first is returned).
    pub async fn stop_all(&self) -> Result<()> {
        let vms: Vec<Arc<MicroVm>> = self.registry().values().cloned().collect();
        let results = futures_util::future::join_all(vms.iter().map(|vm| async move {
            if matches!(vm.state(), crate::lifecycle::VmState::Running | crate::lifecycle::VmState::Paused) {
                vm.stop().await.map(|_| ())
            } else {
                Ok(())
            }
        }))
        .await;
        results.into_iter().collect()
    }

    /// Cleans up and unregisters every VM, then removes the bridge and NAT table this
    /// orchestrator created.
    pub async fn cleanup(&self) -> Result<()> {
        let pools: Vec<_> = self.pool_registry().drain().map(|(_, p)| p).collect();
        futures_util::future::join_all(pools.iter().map(|p| p.close())).await;
        let vms: Vec<Arc<MicroVm>> = self.registry().drain().map(|(_, v)| v).collect();
        let results = futures_util::future::join_all(vms.iter().map(|vm| vm.cleanup())).await;
        let vms_cleaned: Result<()> = results.into_iter().collect();
        #[cfg(feature = "network")]
        if let Some(net) = self.network.get() {
            net.cleanup().await?;
        }
        vms_cleaned
    }

    /// Removes what crashed programs left in the runtime dir (see [`crate::vm::reclaim`]):
    /// VMs whose owner is gone are killed and unwound through their journal; journals that
    /// cannot be trusted, and entries that are not VM dirs, are reported and left alone.
    pub async fn reclaim(&self) -> Result<ReclaimReport> {
        let owned: Vec<PathBuf> = self.registry().values().map(|v| v.runtime_dir().to_path_buf()).collect();
        let scope = self.reclaim_scope();
        #[cfg(feature = "images")]
        let partial_downloads = self.base_image_manager().map(|m| m.remove_partial_downloads()).unwrap_or_default();
        #[cfg(not(feature = "images"))]
        let partial_downloads = Vec::new();
        if !scope.runtime_dir.exists() {
            return Ok(ReclaimReport { partial_downloads, ..ReclaimReport::default() });
        }
        crate::trust::check(&scope.runtime_dir, crate::trust::Expect::Directory)?;
        // On this thread: TAPs live in the network namespace of the caller.
        #[cfg_attr(not(feature = "network"), allow(unused_mut))]
        let mut report = crate::vm::reclaim::reclaim_runtime_dir(&scope, &owned)
            .map_err(|e| SmartVmError::io("cannot list the runtime dir", e))?;
        let in_use = crate::vm::reclaim::has_vm_dirs(&scope.runtime_dir);
        if !in_use {
            // The shared drive mountpoint is only needed while VMs exist (rmdir: only if empty).
            let _ = std::fs::remove_dir(scope.runtime_dir.join(".drives"));
        }
        #[cfg(feature = "network")]
        {
            let (removed, failures) =
                crate::network::reclaim_journaled(&scope.runtime_dir.join(NETWORK_STATE_DIR), in_use).await;
            report.network = removed;
            report.network_failures = failures;
        }
        report.partial_downloads = partial_downloads;
        Ok(report)
    }

    /// Where a reclaim may act: the runtime dir and jail base, not as the VMs' owner.
    fn reclaim_scope(&self) -> UnwindScope {
        UnwindScope { runtime_dir: self.options.runtime_dir.clone(), jail_base: self.options.jail_base(), owner: false }
    }

    /// Opt-in: on SIGINT/SIGTERM, clean up every VM and exit (130/143). The library installs no
    /// signal handler unless this is called.
    pub fn cleanup_on_signals(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            let code = tokio::select! { _ = int.recv() => 130, _ = term.recv() => 143 };
            let _ = this.cleanup().await;
            std::process::exit(code);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_says_how_to_get_one() {
        let vm = SmartVm::new(SmartVmOptions {
            data_dir: "/nonexistent-smartvm".into(),
            firecracker_binary_path: Some("/nonexistent-smartvm/fc".into()),
            ..Default::default()
        });
        let e = vm.find_binary().unwrap_err();
        assert_eq!(e.code(), "BINARY_NOT_FOUND");
        assert!(e.to_string().contains("smartvm binary ensure"), "{e}");
    }
}
